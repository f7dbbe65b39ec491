"""The signalling plane: a sans-I/O SIP core (``switch.sip``), its asyncio transports, the
registrar, trunks and the B2BUA call control. Never imports ``control_api``."""
