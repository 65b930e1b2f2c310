"""Weight formats: GGUF's blocks (Q4_1, Q8_0), torch's int4 and int8, fbgemm's fp16."""
