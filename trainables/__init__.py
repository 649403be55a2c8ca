"""Ray-side code of a trial: data, models, metrics and the worker loop."""
