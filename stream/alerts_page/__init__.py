"""The live alerts page: analysts watch alerts arrive and mark them confirmed or false positive.

A small aiohttp server (``python -m stream alerts-page``), separate from the workers so it
scales and restarts on its own. It reads the recent-alerts stream that the workers write to
Redis, pushes new alerts and verdicts to every open page with Server-Sent Events, and turns
a verdict into a :class:`~models.events.Label` on the labels topic, which the workers learn
from and the lake keeps for the nightly retrain.

* :mod:`.feed`: the alerts in memory, followed live from Redis, fanned out to subscribers.
* :mod:`.filters`: the query a page asks with (kind, decision, time, review status).
* :mod:`.reviews`: who may give a verdict (tokens), recording it once, publishing the label.
* :mod:`.server`: the HTTP routes, Server-Sent Events and security headers.
* :mod:`.cli`: the command.
"""
