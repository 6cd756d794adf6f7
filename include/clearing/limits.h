/* Resource limits of a sandbox and of one command, with parsing and validation. */
#ifndef CLEARING_LIMITS_H
#define CLEARING_LIMITS_H

#include "common.h"

typedef struct clr_limits {
    uint32_t cpu_millis;      /* CPU quota in thousandths of a core: 100..4000 */
    uint64_t memory_bytes;    /* memory, no extra swap: 32 MiB..16 GiB */
    uint32_t pids;            /* processes of the command user: 8..4096 */
    uint32_t lifetime_s;      /* hard lifetime of the sandbox: 10..3600 */
    uint64_t tmp_bytes;       /* size of /tmp: 1 MiB..4 GiB */
    uint64_t workspace_bytes; /* size of /workspace: 1 MiB..64 GiB */
    uint64_t workspace_inodes; /* files in /workspace: 64..10,000,000 */
    uint32_t nofile;          /* open files per process: 64..65536 */
    uint64_t fsize_bytes;     /* largest file a command may write: 1 MiB..64 GiB */
} clr_limits;

#define CLR_MIB (1024ull * 1024ull)
#define CLR_GIB (1024ull * CLR_MIB)

#define CLR_LIMITS_INIT                                                                           \
    {                                                                                             \
        .cpu_millis = 1000, .memory_bytes = 512 * CLR_MIB, .pids = 256, .lifetime_s = 600,        \
        .tmp_bytes = 64 * CLR_MIB, .workspace_bytes = 1 * CLR_GIB, .workspace_inodes = 100000,    \
        .nofile = 1024, .fsize_bytes = 1 * CLR_GIB,                                               \
    }

/* Limits of one command. */
typedef struct clr_exec_limits {
    uint32_t timeout_ms;   /* 1 ms..24 h */
    uint64_t stdout_cap;   /* bytes of stdout kept: 0..64 MiB */
    uint64_t stderr_cap;   /* bytes of stderr kept: 0..64 MiB */
} clr_exec_limits;

#define CLR_EXEC_LIMITS_INIT {.timeout_ms = 60000, .stdout_cap = CLR_MIB, .stderr_cap = CLR_MIB}

/* "512m", "1g", "65536", "1.5GiB" -> bytes. Suffixes k/m/g/t (binary), optional "i"/"b"/"ib". */
/* The same limits, field by field (never memcmp: the struct has padding). */
CLR_PUBLIC bool clr_limits_equal(const clr_limits *a, const clr_limits *b);

CLR_PUBLIC int clr_parse_size(uint64_t *out, const char *text, clr_error *err);
/* "0.5", "2", "1500m" (millicores) -> thousandths of a core. */
CLR_PUBLIC int clr_parse_cpus(uint32_t *out, const char *text, clr_error *err);
/* "30", "30s", "500ms", "5m", "1h" -> milliseconds. */
CLR_PUBLIC int clr_parse_duration_ms(uint64_t *out, const char *text, clr_error *err);
/* A plain non-negative integer with no suffix. */
CLR_PUBLIC int clr_parse_uint(uint64_t *out, const char *text, clr_error *err);

/* Checks every field against its range; the message names the field, the value and the range. */
CLR_PUBLIC int clr_limits_validate(const clr_limits *limits, clr_error *err);
CLR_PUBLIC int clr_exec_limits_validate(const clr_exec_limits *limits, clr_error *err);

/* Formats bytes as the shortest exact form ("512m", "1g", "1536k", "100"). */
CLR_PUBLIC void clr_format_size(char *buf, size_t len, uint64_t bytes);

#endif
