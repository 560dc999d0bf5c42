"""Lanedesk's BPMN runtime: a thin, hardened layer over SpiffWorkflow 3.2.0.

Imports SpiffWorkflow and the standard library only (plus lxml and RestrictedPython, which
SpiffWorkflow's parser and our sandbox need). Knows nothing of tickets, SQL, Flask or Celery.
"""
