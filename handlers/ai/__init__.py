"""The "Help with AI" troubleshooter: conversations, the safety gate, the engines that answer."""
