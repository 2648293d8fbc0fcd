"""Notifications out of the backend: the outbound URL guard (`guard`), what each kind of
destination is sent (`payloads`), and the delivery worker (`deliver`) that every backend
runs over the outbox `backend.store.outbox` fills."""
