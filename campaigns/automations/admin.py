"""Admin of the automations app."""

from campaigns.automations import flow_admin  # noqa: F401 - registers the flow and enrolment admins
