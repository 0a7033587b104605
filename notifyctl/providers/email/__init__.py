"""Email providers: outbox folder, SES, SMTP, Postmark, and the MIME writer they share."""
