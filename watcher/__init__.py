"""hybrid-watcher: the VM daemon that submits videos and collects their results."""
