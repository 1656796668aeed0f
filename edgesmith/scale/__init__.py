"""Scale-out: `sweep` (many conversions as Ray tasks), `tune` (a recipe search with Optuna on Ray
Tune) and the conversion cache they share. Needs the `scale` extra; nothing else imports this."""
