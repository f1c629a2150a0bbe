"""Compression: distillation on the shared loop (`distillation`), pruning, int8 quantization, variants on
disk (`storage`), the variant builders and the compress table (`variants`), latency measurement (`speed`)."""
