"""The load generator and the null server it is measured against; nothing else imports it."""
