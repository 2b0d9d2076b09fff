"""The strict KMS client (every check of spec 5.7) and the judgement of a host's answer."""
