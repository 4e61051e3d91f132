"""A real browser's EventSource (headless Chromium via Playwright), against the demo and a
test app."""
