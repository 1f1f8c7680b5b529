"""Float and integer references of the models in host/models, checked against each other
and against the chip."""
