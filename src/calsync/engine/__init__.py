"""The sync engine: one sync pass for one mailbox, from the stored sync state to the application calendar."""
