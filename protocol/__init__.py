"""What travels on the wire: msgspec Structs, codecs and the client library."""
