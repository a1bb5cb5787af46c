"""Running one analysis, in the order it happens: plan how to run (plan), leave the model as found (guard), build
the twin a training step runs on (step), run under the collectors (execute), turn failures into errors (failures),
and assemble the report (build). ``torchcost.api.analyze`` strings them together."""
