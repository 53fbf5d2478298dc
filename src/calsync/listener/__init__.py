"""The EWS push-notification listener: what Exchange POSTs to calsync (SendNotification) and what calsync answers."""
