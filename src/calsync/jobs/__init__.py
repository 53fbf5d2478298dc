"""The three jobs (ProcessPushNotifications, ManagePushSubscriptions, Reconciliation), their intervals and the
scheduler that runs them."""
