"""The running daemon: listener, sessions, the activation service and what keeps them up."""
