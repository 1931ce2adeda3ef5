"""The automations pages of the staff app (/app/automations/): the flow list, a flow's detail with
its per-step funnel and the dry run, and activate / pause through automations.update_state's service."""
