"""Orders and dispatch: creation, the job's life, the open pool and feed, positions, attachments, who sees what."""
