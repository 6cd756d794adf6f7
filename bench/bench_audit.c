/* clearing-bench-audit: what the audit log costs an exec.
 *
 * One sandbox runs `true` back to back through libclearing (clr_exec_run), in three
 * configurations measured in the same run:
 *
 *   no audit        the exec alone
 *   audit on disk   the exec between the two records the daemon writes for it: exec.start
 *                   (clr_audit_exec_request) before, exec (clr_audit_exec_result) after, each
 *                   clr_audit_append'ed and fdatasync'd, to a log on a real disk (/var/tmp)
 *   audit on tmpfs  the same to a log on a tmpfs mounted for the run: the cost of the records
 *                   without the cost of the disk
 *
 * The configurations take turns in one-second slices (the first of each round rotating) until
 * each has had the whole duration, so drift in the machine's load lands on all three alike.
 * Execs per second are the successful execs of a configuration over the time its slices took;
 * the overhead is the share of the no-audit rate a configuration loses. Each exec is timed with
 * its records; checking the outcome (that `true` exited 0) is not.
 *
 * Then a micro-benchmark of clr_audit_append alone: appends of a typical exec record back to
 * back, disk and tmpfs alternating in blocks of 100, with their rate and latency percentiles.
 *
 * Every log is verified (clr_audit_verify) after the run. A failed exec or append is reported
 * on stderr and counted; the exit status is non-zero if anything failed, a log did not verify,
 * or anything was left behind. The sandbox, the logs and the tmpfs are removed, on failure and
 * on SIGINT/SIGTERM too (the current exec finishes first; a second signal kills the process). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <jansson.h>

#include "clearing/audit.h"
#include "harness.h"

#define DEFAULT_DURATION_S 15
#define QUICK_DURATION_S 3
#define MIN_DURATION_S 5
#define MAX_DURATION_S 600
#define SLICE_MS 1000
#define DEFAULT_APPENDS 2000
#define QUICK_APPENDS 200
#define MIN_APPENDS 100
#define MAX_APPENDS 1000000
#define APPEND_BLOCK 100
#define DEFAULT_DISK_DIR "/var/tmp"
#define TMPFS_PARENT "/tmp"
#define TMPFS_OPTIONS "size=256m,mode=0700"
#define ACTOR "clearing-bench-audit"

enum cfg { CFG_NONE, CFG_DISK, CFG_TMPFS, CFG_COUNT };
enum target { TGT_DISK, TGT_TMPFS, TGT_COUNT };

static const char *const cfg_names[CFG_COUNT] = {"no audit", "audit on disk", "audit on tmpfs"};
static const char *const cfg_keys[CFG_COUNT] = {"none", "disk", "tmpfs"};
static const char *const target_keys[TGT_COUNT] = {"disk", "tmpfs"};

struct bench {
    clr_engine *eng;
    clr_sandbox *sb;
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    unsigned duration_s, appends;
    const char *disk_parent;
    char disk_dir[PATH_MAX], tmpfs_dir[PATH_MAX];
    char disk_fs[32];
    bool disk_made, tmpfs_made, tmpfs_mounted;
    char exec_log_path[TGT_COUNT][PATH_MAX + 32], append_log_path[TGT_COUNT][PATH_MAX + 32];
    clr_audit *exec_log[TGT_COUNT], *append_log[TGT_COUNT];
    struct bench_series exec[CFG_COUNT];   /* ms */
    struct bench_series append[TGT_COUNT]; /* us */
    uint64_t exec_seq;
    json_t *append_details; /* a typical exec record's details, for the micro-benchmark */
    uint64_t verified[TGT_COUNT][2]; /* records in the exec log and the append log */
    unsigned broken_logs;
};

static enum target target_of(enum cfg c)
{
    return c == CFG_DISK ? TGT_DISK : TGT_TMPFS;
}

/* ---- setup and teardown ---- */

static const char *fs_name(long type)
{
    switch (type) {
    case EXT4_SUPER_MAGIC: return "ext4";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case TMPFS_MAGIC: return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlay";
    case 0x2fc12fc1: return "zfs";
    default: return "other";
    }
}

static int make_dirs(struct bench *b, clr_error *err)
{
    snprintf(b->disk_dir, sizeof(b->disk_dir), "%s/clearing-bench-audit.XXXXXX", b->disk_parent);
    if (!mkdtemp(b->disk_dir))
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot make a directory in %s: %s (choose another with --disk-dir)",
                             b->disk_parent, strerror(errno));
    b->disk_made = true;
    struct statfs sf;
    snprintf(b->disk_fs, sizeof(b->disk_fs), "%s",
             statfs(b->disk_dir, &sf) == 0 ? fs_name((long)sf.f_type) : "unknown");
    if (strcmp(b->disk_fs, "tmpfs") == 0)
        fprintf(stderr, "clearing-bench-audit: warning: %s is on a tmpfs, so \"audit on disk\" "
                        "does not measure a disk (choose another with --disk-dir)\n",
                b->disk_parent);

    snprintf(b->tmpfs_dir, sizeof(b->tmpfs_dir), TMPFS_PARENT "/clearing-bench-audit-tmpfs.XXXXXX");
    if (!mkdtemp(b->tmpfs_dir))
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot make a directory in "
                             TMPFS_PARENT ": %s", strerror(errno));
    b->tmpfs_made = true;
    if (mount("tmpfs", b->tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, TMPFS_OPTIONS) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot mount a tmpfs on %s: %s",
                             b->tmpfs_dir, strerror(errno));
    b->tmpfs_mounted = true;

    const char *dirs[TGT_COUNT] = {b->disk_dir, b->tmpfs_dir};
    for (int t = 0; t < TGT_COUNT; t++) {
        snprintf(b->exec_log_path[t], sizeof(b->exec_log_path[t]), "%s/exec-audit.log", dirs[t]);
        snprintf(b->append_log_path[t], sizeof(b->append_log_path[t]), "%s/append-audit.log",
                 dirs[t]);
        clr_audit_options ao = CLR_AUDIT_OPTIONS_INIT;
        ao.path = b->exec_log_path[t];
        if (clr_audit_open(&b->exec_log[t], &ao, err) < 0)
            return -1;
        ao.path = b->append_log_path[t];
        if (clr_audit_open(&b->append_log[t], &ao, err) < 0)
            return -1;
    }
    return 0;
}

/* Removes a log, its rotated files, the lock file its writers share (PATH.lock), and its signed
 * checkpoint with the key that signs it (PATH.checkpoint, PATH.key). */
static void remove_log(const char *path)
{
    static const char *const companions[] = {"lock", "checkpoint", "checkpoint.tmp", "key"};
    char **files = NULL;
    size_t n = 0;
    if (!path[0])
        return;
    for (size_t i = 0; i < sizeof(companions) / sizeof(companions[0]); i++) {
        char extra[PATH_MAX + 40];
        if (snprintf(extra, sizeof(extra), "%s.%s", path, companions[i]) < (int)sizeof(extra))
            unlink(extra);
    }
    if (clr_audit_files(&files, &n, path, NULL) < 0)
        return;
    for (size_t i = 0; i < n; i++)
        unlink(files[i]);
    clr_audit_files_free(files);
}

/* Returns how many things could not be removed (named on stderr). */
static unsigned remove_dirs(struct bench *b)
{
    unsigned left = 0;
    for (int t = 0; t < TGT_COUNT; t++) {
        clr_audit_close(b->exec_log[t]);
        clr_audit_close(b->append_log[t]);
        b->exec_log[t] = b->append_log[t] = NULL;
    }
    if (b->disk_made) {
        remove_log(b->exec_log_path[TGT_DISK]);
        remove_log(b->append_log_path[TGT_DISK]);
        if (rmdir(b->disk_dir) < 0) {
            fprintf(stderr, "left behind: %s (%s); remove it with `rm -r %s`\n", b->disk_dir,
                    strerror(errno), b->disk_dir);
            left++;
        }
    }
    if (b->tmpfs_mounted && umount2(b->tmpfs_dir, MNT_DETACH) < 0) {
        fprintf(stderr, "left behind: the tmpfs on %s (%s); remove it with `umount %s`\n",
                b->tmpfs_dir, strerror(errno), b->tmpfs_dir);
        return left + 1;
    }
    if (b->tmpfs_made && rmdir(b->tmpfs_dir) < 0) {
        fprintf(stderr, "left behind: %s (%s)\n", b->tmpfs_dir, strerror(errno));
        left++;
    }
    return left;
}

/* ---- the measurements ---- */

/* One exec of `true`, between its two records when cfg audits. Returns 0 when it succeeded. */
static int audited_exec(struct bench *b, enum cfg c)
{
    static const char *const argv[] = {"true", NULL};
    clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
    eo.argv = argv;
    eo.cancel = &bench_interrupted;
    clr_audit *log = c == CFG_NONE ? NULL : b->exec_log[target_of(c)];
    clr_error err = CLR_ERROR_INIT;
    char exec_id[32];
    snprintf(exec_id, sizeof(exec_id), "ex-%016" PRIx64, ++b->exec_seq);

    double t0 = bench_now_ms();
    if (log) {
        json_t *d = clr_audit_exec_request(&eo);
        json_object_set_new(d, "exec_id", json_string(exec_id));
        int rc = clr_audit_append(log, ACTOR, b->sandbox_id, "exec.start", "ok", d, &err);
        json_decref(d);
        if (rc < 0) {
            b->exec[c].failed++;
            fprintf(stderr, "%s: exec.start record failed: %s\n", cfg_names[c], err.message);
            return -1;
        }
    }
    clr_exec_result res;
    if (clr_exec_run(&res, b->eng, b->sb, &eo, &err) < 0) {
        b->exec[c].failed++;
        fprintf(stderr, "%s: exec failed: %s\n", cfg_names[c], err.message);
        return -1;
    }
    int rc = 0;
    if (log) {
        json_t *d = clr_audit_exec_result(&res);
        json_object_set_new(d, "exec_id", json_string(exec_id));
        rc = clr_audit_append(log, ACTOR, b->sandbox_id, "exec", clr_exec_status_name(res.status),
                              d, &err);
        json_decref(d);
    }
    double t1 = bench_now_ms();
    if (rc < 0) {
        fprintf(stderr, "%s: exec record failed: %s\n", cfg_names[c], err.message);
    } else if (bench_interrupted) {
        /* Cancelled by SIGINT/SIGTERM: not a failure of the exec, and not a sample. */
        clr_exec_result_clear(&res);
        return -1;
    } else if (res.status != CLR_EXEC_EXITED || res.exit_code != 0) {
        fprintf(stderr, "%s: `true` ended %s, exit code %d%s%.512s\n", cfg_names[c],
                clr_exec_status_name(res.status), res.exit_code, res.message[0] ? ": " : "",
                res.message);
        rc = -1;
    } else if (bench_series_add(&b->exec[c], t1 - t0) < 0) {
        fprintf(stderr, "clearing-bench-audit: out of memory\n");
        rc = -1;
    }
    if (rc < 0)
        b->exec[c].failed++;
    clr_exec_result_clear(&res);
    return rc;
}

/* Untimed: the agent's first start, the logs' first records, and a typical exec record. */
static int warm_up(struct bench *b)
{
    for (int c = 0; c < CFG_COUNT; c++) {
        if (audited_exec(b, (enum cfg)c) < 0)
            return -1;
        b->exec[c].n = 0;
    }
    static const char *const argv[] = {"true", NULL};
    clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
    eo.argv = argv;
    clr_exec_result res;
    clr_error err = CLR_ERROR_INIT;
    if (clr_exec_run(&res, b->eng, b->sb, &eo, &err) < 0) {
        fprintf(stderr, "warm-up exec failed: %s\n", err.message);
        return -1;
    }
    b->append_details = clr_audit_exec_result(&res);
    json_object_set_new(b->append_details, "exec_id", json_string("ex-0000000000000000"));
    clr_exec_result_clear(&res);
    return b->append_details ? 0 : -1;
}

static void exec_slices(struct bench *b)
{
    unsigned slices = (b->duration_s * 1000 + SLICE_MS - 1) / SLICE_MS;
    for (unsigned round = 0; round < slices && !bench_interrupted; round++) {
        for (int k = 0; k < CFG_COUNT && !bench_interrupted; k++) {
            enum cfg c = (enum cfg)((round + (unsigned)k) % CFG_COUNT);
            double start = bench_now_ms(), end = start;
            while (!bench_interrupted && (end = bench_now_ms()) - start < SLICE_MS)
                audited_exec(b, c);
            b->exec[c].busy_ms += end - start;
        }
        fprintf(stderr, "slice %u/%u:", round + 1, slices);
        for (int c = 0; c < CFG_COUNT; c++)
            fprintf(stderr, "%s %s %zu execs", c ? " |" : "", cfg_names[c], b->exec[c].n);
        fprintf(stderr, "\n");
    }
}

static void append_blocks(struct bench *b)
{
    unsigned done[TGT_COUNT] = {0, 0};
    while (!bench_interrupted && (done[TGT_DISK] < b->appends || done[TGT_TMPFS] < b->appends)) {
        for (int t = 0; t < TGT_COUNT && !bench_interrupted; t++) {
            struct bench_series *s = &b->append[t];
            double start = bench_now_ms();
            for (unsigned i = 0; i < APPEND_BLOCK && done[t] < b->appends; i++, done[t]++) {
                clr_error err = CLR_ERROR_INIT;
                double t0 = bench_now_ms();
                int rc = clr_audit_append(b->append_log[t], ACTOR, b->sandbox_id, "exec",
                                          "exited", b->append_details, &err);
                double t1 = bench_now_ms();
                if (rc < 0) {
                    s->failed++;
                    fprintf(stderr, "append to %s failed: %s\n", target_keys[t], err.message);
                } else if (bench_series_add(s, (t1 - t0) * 1000.0) < 0) {
                    s->failed++;
                }
            }
            s->busy_ms += bench_now_ms() - start;
        }
    }
    fprintf(stderr, "appends: disk %zu, tmpfs %zu\n", b->append[TGT_DISK].n,
            b->append[TGT_TMPFS].n);
}

/* Outside any clock: every log must still be one unbroken chain. */
static void verify_logs(struct bench *b)
{
    for (int t = 0; t < TGT_COUNT; t++) {
        const char *paths[2] = {b->exec_log_path[t], b->append_log_path[t]};
        for (int k = 0; k < 2; k++) {
            char **files = NULL;
            size_t n = 0;
            clr_error err = CLR_ERROR_INIT;
            clr_audit_verify_report r;
            if (clr_audit_files(&files, &n, paths[k], &err) < 0 ||
                clr_audit_verify(&r, (const char *const *)files, n, false, &err) < 0) {
                fprintf(stderr, "verifying %s: %s\n", paths[k], err.message);
                b->broken_logs++;
            } else if (!r.ok) {
                fprintf(stderr, "%s does not verify: line %" PRIu64 " (record %" PRIu64 "): %s\n",
                        r.file, r.line, r.seq, r.problem);
                b->broken_logs++;
            } else {
                b->verified[t][k] = r.records;
            }
            clr_audit_files_free(files);
        }
    }
}

/* ---- figures ---- */

/* The share of the no-audit exec rate that configuration c loses, in percent. */
static double overhead_pct(const struct bench *b, enum cfg c)
{
    double base = bench_rate(&b->exec[CFG_NONE]);
    if (c == CFG_NONE || isnan(base) || base <= 0)
        return NAN;
    return (1.0 - bench_rate(&b->exec[c]) / base) * 100.0;
}

static void print_table(struct bench *b)
{
    unsigned failed_execs = 0, failed_appends = 0;
    for (int c = 0; c < CFG_COUNT; c++)
        failed_execs += b->exec[c].failed;
    for (int t = 0; t < TGT_COUNT; t++)
        failed_appends += b->append[t].failed;
    printf("audit: exec of `true` back to back in one sandbox, %u s per configuration in %d s "
           "slices, interleaved; image %s, runtime runsc, engine API %s\n",
           b->duration_s, SLICE_MS / 1000, CLR_DEFAULT_IMAGE, clr_engine_api_version(b->eng));
    printf("audited execs write exec.start before and exec after (clr_audit_append, fdatasync); "
           "disk log in %s (%s), tmpfs log in %s\n",
           b->disk_parent, b->disk_fs, TMPFS_PARENT);
    printf("failed: execs %u, appends %u; logs verified: %s\n\n", failed_execs, failed_appends,
           b->broken_logs ? "NO" : "yes");
    printf("%-14s | %6s | %8s | %8s | %8s | %8s | %8s\n", "configuration", "execs", "execs/s",
           "exec p50", "exec p95", "exec p99", "overhead");
    printf("---------------+--------+----------+----------+----------+----------+---------\n");
    for (int c = 0; c < CFG_COUNT; c++) {
        const struct bench_series *s = &b->exec[c];
        printf("%-14s | %6zu |", cfg_names[c], s->n);
        bench_cell(bench_rate(s), 8, 1);
        bench_cell(bench_percentile(s, 50), 8, 1);
        bench_cell(bench_percentile(s, 95), 8, 1);
        bench_cell(bench_percentile(s, 99), 8, 1);
        double o = overhead_pct(b, (enum cfg)c);
        if (isnan(o))
            printf(" %8s\n", "-");
        else
            printf(" %7.1f%%\n", o);
    }
    printf("(exec p50/p95/p99 in milliseconds, including the records; overhead: the share of the "
           "no-audit execs/s lost)\n\n");
    printf("%-13s | %7s | %9s | %8s | %8s | %8s\n", "append target", "appends", "appends/s",
           "p50 us", "p95 us", "p99 us");
    printf("--------------+---------+-----------+----------+----------+---------\n");
    for (int t = 0; t < TGT_COUNT; t++) {
        const struct bench_series *s = &b->append[t];
        printf("%-13s | %7zu |", target_keys[t], s->n);
        bench_cell(bench_rate(s), 9, 0);
        bench_cell(bench_percentile(s, 50), 8, 1);
        bench_cell(bench_percentile(s, 95), 8, 1);
        double p99 = bench_percentile(s, 99);
        if (isnan(p99))
            printf(" %8s\n", "-");
        else
            printf(" %8.1f\n", p99);
    }
    printf("(clr_audit_append of a typical exec record, microseconds; percentiles by nearest "
           "rank)\n\n");
    /* One line per row for scripts: grep '^BENCH audit '. */
    for (int c = 0; c < CFG_COUNT; c++) {
        const struct bench_series *s = &b->exec[c];
        printf("BENCH audit exec config=%s execs=%zu seconds=%.1f execs_per_s=%.1f p50_ms=%.1f "
               "p95_ms=%.1f p99_ms=%.1f overhead_pct=%.1f failed=%u\n",
               cfg_keys[c], s->n, s->busy_ms / 1000.0, bench_rate(s), bench_percentile(s, 50),
               bench_percentile(s, 95), bench_percentile(s, 99), overhead_pct(b, (enum cfg)c),
               s->failed);
    }
    for (int t = 0; t < TGT_COUNT; t++) {
        const struct bench_series *s = &b->append[t];
        printf("BENCH audit append target=%s appends=%zu seconds=%.3f appends_per_s=%.0f "
               "p50_us=%.1f p95_us=%.1f p99_us=%.1f failed=%u\n",
               target_keys[t], s->n, s->busy_ms / 1000.0, bench_rate(s), bench_percentile(s, 50),
               bench_percentile(s, 95), bench_percentile(s, 99), s->failed);
    }
}

/* Rounded to a thousandth, or null when there is no figure. */
static json_t *num_json(double v)
{
    return bench_num_json(v, 1000);
}

static void print_json(struct bench *b, unsigned left_behind)
{
    json_t *execs = json_object();
    for (int c = 0; c < CFG_COUNT; c++) {
        const struct bench_series *s = &b->exec[c];
        json_t *samples = json_array();
        for (size_t i = 0; i < s->n; i++)
            json_array_append_new(samples, num_json(s->v[i]));
        json_object_set_new(
            execs, cfg_keys[c],
            json_pack("{s:I, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "execs",
                      (json_int_t)s->n, "failed", (int)s->failed, "seconds",
                      num_json(s->busy_ms / 1000.0), "execs_per_s", num_json(bench_rate(s)),
                      "p50_ms", num_json(bench_percentile(s, 50)), "p95_ms",
                      num_json(bench_percentile(s, 95)), "p99_ms",
                      num_json(bench_percentile(s, 99)), "overhead_pct",
                      num_json(overhead_pct(b, (enum cfg)c)), "samples_ms", samples));
    }
    json_t *appends = json_object();
    for (int t = 0; t < TGT_COUNT; t++) {
        const struct bench_series *s = &b->append[t];
        json_object_set_new(
            appends, target_keys[t],
            json_pack("{s:I, s:i, s:o, s:o, s:o, s:o, s:o}", "appends", (json_int_t)s->n,
                      "failed", (int)s->failed, "seconds", num_json(s->busy_ms / 1000.0),
                      "appends_per_s", num_json(bench_rate(s)), "p50_us",
                      num_json(bench_percentile(s, 50)),
                      "p95_us", num_json(bench_percentile(s, 95)), "p99_us",
                      num_json(bench_percentile(s, 99))));
    }
    json_t *j = json_pack(
        "{s:s, s:i, s:i, s:s, s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:{s:{s:I, s:I}, s:{s:I, s:I}},"
        " s:b, s:i, s:o, s:o}",
        "benchmark", "audit", "duration_s", (int)b->duration_s, "slice_ms", SLICE_MS, "image",
        CLR_DEFAULT_IMAGE, "runtime", "runsc", "engine_api", clr_engine_api_version(b->eng),
        "disk", "dir", b->disk_parent, "filesystem", b->disk_fs, "tmpfs_dir", TMPFS_PARENT,
        "percentile_method", "nearest-rank", "verified_records", "disk", "exec_log",
        (json_int_t)b->verified[TGT_DISK][0], "append_log", (json_int_t)b->verified[TGT_DISK][1],
        "tmpfs", "exec_log", (json_int_t)b->verified[TGT_TMPFS][0], "append_log",
        (json_int_t)b->verified[TGT_TMPFS][1], "logs_verified", b->broken_logs == 0,
        "left_behind", (int)left_behind, "exec", execs, "append", appends);
    bench_print_json(j);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: clearing-bench-audit [--duration S] [--appends N] [--disk-dir DIR] [--quick]\n"
            "                            [--json]\n\n"
            "Measures exec throughput of `true` in one sandbox through libclearing with no\n"
            "audit log, with the daemon's two records per exec on a disk, and on a tmpfs,\n"
            "interleaved in %d s slices; then clr_audit_append alone on the disk and the tmpfs.\n"
            "Needs root (it mounts a tmpfs), a running dockerd with runsc registered, the image\n"
            CLR_DEFAULT_IMAGE ", and CLEARING_AGENT pointing at clearing-agent (bench/run.sh\n"
            "sets it).\n\n"
            "  --duration S   exec seconds per configuration (default %d; %d..%d unless --quick)\n"
            "  --appends N    appends per target in the micro-benchmark (default %d; at least\n"
            "                 %d unless --quick)\n"
            "  --disk-dir DIR where the disk log goes (default " DEFAULT_DISK_DIR ")\n"
            "  --quick        smoke test: %d s and %d appends by default, any values allowed\n"
            "  --json         print the figures (and every exec sample) as one JSON object\n"
            "\nExit status: 0 all went well, 1 an exec or append failed, a log did not verify or\n"
            "something was left behind, 2 bad usage or the host is not ready.\n",
            SLICE_MS / 1000, DEFAULT_DURATION_S, MIN_DURATION_S, MAX_DURATION_S, DEFAULT_APPENDS,
            MIN_APPENDS, QUICK_DURATION_S, QUICK_APPENDS);
}

/* The options into b; BENCH_RUN, or the exit status. */
static int parse_options(struct bench *b, bool *json, int argc, char **argv)
{
    uint64_t duration = 0, appends = 0;
    const struct bench_opt opts[] = {
        {"duration", BENCH_OPT_COUNT, MAX_DURATION_S, &duration},
        {"appends", BENCH_OPT_COUNT, MAX_APPENDS, &appends},
        {"disk-dir", BENCH_OPT_STRING, 0, &b->disk_parent},
    };
    struct bench_args a = {.prog = "clearing-bench-audit", .usage = usage, .opts = opts,
                           .nopts = sizeof(opts) / sizeof(opts[0])};
    int rc = bench_parse_args(&a, argc, argv);
    if (rc != BENCH_RUN)
        return rc;
    *json = a.json;
    if (duration == 0)
        duration = a.quick ? QUICK_DURATION_S : DEFAULT_DURATION_S;
    if (appends == 0)
        appends = a.quick ? QUICK_APPENDS : DEFAULT_APPENDS;
    /* Fewer samples make a p95 that is little more than the maximum. */
    if (!a.quick && (duration < MIN_DURATION_S || appends < MIN_APPENDS)) {
        fprintf(stderr,
                "clearing-bench-audit: --duration is at least %d and --appends at least %d; "
                "use --quick for a smoke test\n",
                MIN_DURATION_S, MIN_APPENDS);
        return BENCH_EXIT_USAGE;
    }
    b->duration_s = (unsigned)duration;
    b->appends = (unsigned)appends;
    return BENCH_RUN;
}

/* The sandbox, then the execs and the appends. Returns -1 if the run could not take place. */
static int run(struct bench *b)
{
    clr_error err = CLR_ERROR_INIT;
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    /* Long enough for the longest run (3 x MAX_DURATION_S and the appends). */
    so.limits.lifetime_s = 3600;
    if (clr_sandbox_create(&b->sb, b->eng, &so, &err) < 0) {
        fprintf(stderr, "clearing-bench-audit: creating the sandbox: %s\n", err.message);
        return -1;
    }
    snprintf(b->sandbox_id, sizeof(b->sandbox_id), "%s", clr_sandbox_get_info(b->sb)->id);
    if (warm_up(b) < 0)
        return -1;
    exec_slices(b);
    append_blocks(b);
    return 0;
}

static void free_bench(struct bench *b)
{
    json_decref(b->append_details);
    clr_engine_free(b->eng);
    for (int k = 0; k < CFG_COUNT; k++)
        bench_series_free(&b->exec[k]);
    for (int t = 0; t < TGT_COUNT; t++)
        bench_series_free(&b->append[t]);
}

int main(int argc, char **argv)
{
    struct bench b = {.disk_parent = DEFAULT_DISK_DIR};
    bool json = false;
    int rc = parse_options(&b, &json, argc, argv);
    if (rc != BENCH_RUN)
        return rc;
    if (bench_open_engine(&b.eng, "clearing mounts a tmpfs workspace per sandbox (and this "
                                  "benchmark a tmpfs for its log)") < 0)
        return BENCH_EXIT_USAGE;
    clr_error err = CLR_ERROR_INIT;
    if (make_dirs(&b, &err) < 0) {
        fprintf(stderr, "clearing-bench-audit: %s: %s\n", clr_error_code_name(err.code),
                err.message);
        remove_dirs(&b);
        clr_engine_free(b.eng);
        return BENCH_EXIT_USAGE;
    }
    /* Stop after the current exec; what was made is still removed. */
    bench_catch_signals();

    bool failed = run(&b) < 0;
    if (bench_interrupted)
        fprintf(stderr, "interrupted\n");
    unsigned left_behind = 0;
    if (b.sb) {
        clr_sandbox_free(b.sb);
        left_behind += bench_remove_sandbox(b.eng, b.sandbox_id, NULL);
    }
    if (!failed)
        verify_logs(&b);
    left_behind += remove_dirs(&b);

    for (int k = 0; k < CFG_COUNT; k++)
        bench_series_sort(&b.exec[k]);
    for (int t = 0; t < TGT_COUNT; t++)
        bench_series_sort(&b.append[t]);
    if (!failed) {
        if (json)
            print_json(&b, left_behind);
        else
            print_table(&b);
    }

    for (int k = 0; k < CFG_COUNT; k++)
        failed = failed || b.exec[k].failed > 0;
    for (int t = 0; t < TGT_COUNT; t++)
        failed = failed || b.append[t].failed > 0;
    failed = failed || bench_interrupted || left_behind > 0 || b.broken_logs > 0;
    free_bench(&b);
    return failed ? BENCH_EXIT_FAILED : BENCH_EXIT_OK;
}
