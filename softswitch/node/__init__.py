"""The node, sans-IO: SIP endpoint, trunk, outbound legs, test lines and the call controller."""
