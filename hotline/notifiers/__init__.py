"""The notifiers behind `hotline.notify.Notifier` (docs/notifications.md).

- `wechat.WeChatWorkNotifier`: a WeChat Work (企业微信) group robot;
- `sms.SmsNotifier`: SMS through Twilio;
- `routing.RoutingNotifier`: one notifier that picks the channels per notice
  and retries a failed channel on its own;
- `channels.build_notifier(config, teams, outbox)`: what the service calls;
- `cli`: `hotline notify channels|test`.

Nothing is imported here, so `hotline`'s CLI does not load twilio and requests
for verbs that never send anything.
"""
