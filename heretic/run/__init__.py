"""One run of heretic: the recipe over the engine, its worker processes, the study's files, and
the report and model card it writes. Imports the layers below (engine, config, preflight,
lifecycle); nothing below imports from here."""
