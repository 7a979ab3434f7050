"""The main job: the whole ModelBus loop on the embedded stack, shown live to a person."""
