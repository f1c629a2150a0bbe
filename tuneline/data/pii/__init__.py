"""Personal data: presidio engine setup (engine), the fast batched path (fast), leak patterns (leaks)."""
