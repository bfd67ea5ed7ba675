"""Where units run: Ray (the prepare fan-out, the extraction actor pool) or this process; the stages do not know."""
