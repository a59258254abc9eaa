"""Date and time formats for English (settings.FORMAT_MODULE_PATH): times with seconds.

The admin is where operators read when a job started and finished or a key was last used;
Django's English formats show minutes only ("2:05 p.m."), so two events a few seconds apart
look simultaneous. A locale's formats take precedence over settings.DATETIME_FORMAT, so the
override has to be a format module.
"""

from __future__ import annotations

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
