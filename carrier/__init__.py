"""Carriers other than Asterisk: Twilio Programmable Voice (docs/twilio.md)."""
