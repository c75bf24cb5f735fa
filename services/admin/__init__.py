"""Operator commands: written once, served to the CLI, the control socket and
(later) the REST API and XEP-0133 ad-hoc commands."""
