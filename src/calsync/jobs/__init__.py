"""The two jobs (ProcessPushNotifications, ManagePushSubscriptions) and the scheduler that runs them."""
