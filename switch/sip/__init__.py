"""Sans-I/O SIP (RFC 3261 and friends): parsers and state machines fed bytes, events and a
clock value; they return events and datagrams and never touch sockets or wall clocks."""
