// E-mail channel (nodemailer). STARTTLS is required by default, so a server that drops the
// STARTTLS offer (a downgrade) gets no mail rather than a plaintext one.
import nodemailer, { type Transporter } from 'nodemailer'
import type { EmailConfig } from './config.js'
import { type Notification, type NotificationChannel, notificationText } from './types.js'

export function emailSubject(prefix: string, n: Notification): string {
  return `${prefix ? `${prefix} ` : ''}${n.severity.toUpperCase()}: ${n.title}`
}

export class EmailChannel implements NotificationChannel {
  readonly name = 'email'
  private readonly transport: Transporter

  constructor(private readonly config: EmailConfig) {
    const c = config
    this.transport = nodemailer.createTransport({
      host: c.host,
      port: c.port,
      secure: c.security === 'tls',
      requireTLS: c.security === 'starttls',
      ignoreTLS: c.security === 'none',
      auth: c.user ? { user: c.user, pass: c.password ?? '' } : undefined,
      tls: { ca: c.ca, rejectUnauthorized: c.rejectUnauthorized, minVersion: 'TLSv1.2' },
      connectionTimeout: c.timeoutMs,
      greetingTimeout: c.timeoutMs,
      socketTimeout: c.timeoutMs,
    })
  }

  async send(n: Notification): Promise<void> {
    await this.transport.sendMail({
      from: this.config.from,
      to: this.config.to,
      subject: emailSubject(this.config.subjectPrefix, n),
      text: notificationText(n),
      headers: { 'X-Replimesh-Kind': n.kind, 'X-Replimesh-Id': n.id },
    })
  }

  async close(): Promise<void> {
    this.transport.close()
  }
}
