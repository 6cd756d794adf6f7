/* Files in a live (or lost) sandbox's workspace: clr_service_file_*() and
 * clr_service_archive_*(); the contract is in include/clearing/service.h. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "rows.h"
#include "service_int.h"

CLR_DEFINE_CLEANUP(EVP_MD_CTX *, EVP_MD_CTX_free)
#define _cleanup_md_ctx_ __attribute__((cleanup(EVP_MD_CTX_freep)))

static void sha256_fd(int fd, char out[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    char buf[65536];
    _cleanup_md_ctx_ EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    out[0] = '\0';
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) || lseek(fd, 0, SEEK_SET) < 0)
        return;
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)r);
    if (r == 0 && EVP_DigestFinal_ex(ctx, d, &n)) {
        static const char hexd[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
            out[2 * i] = hexd[d[i] >> 4];
            out[2 * i + 1] = hexd[d[i] & 15];
        }
        out[64] = '\0';
    }
    lseek(fd, 0, SEEK_SET);
}

/* A path or name from the workspace or the client (any bytes but NUL, not always UTF-8), as a
 * JSON string: as it is when it is UTF-8, else with the other bytes written as \xNN
 * (clr_audit_text); NULL stays NULL. A string jansson refuses would drop the entry or answer. */
static json_t *name_json(const char *s)
{
    if (!s)
        return NULL;
    json_t *j = json_string(s);
    return j ? j : clr_audit_text(s, strlen(s), SIZE_MAX);
}

/* read_only: a lost sandbox's workspace may be read too. */
static int open_workspace(clr_service *svc, const char *id, bool read_only, int *root,
                          clr_error *err)
{
    char dir[4096];
    if ((read_only ? svc_workspace_to_read(svc, id, dir, sizeof(dir), err)
                   : clr_service_workspace(svc, id, dir, sizeof(dir), err)) < 0)
        return -1;
    return clr_files_open_root(root, dir, err);
}

/* Fail closed: an action that changes the workspace runs only when its record can be written.
 * The record comes after the action (it says what was done), so a log that cannot take it
 * refuses the action before it runs, instead of leaving a change nobody recorded. */
static int audit_ready(clr_service *svc, clr_error *err)
{
    char why[sizeof(err->message)];
    if (clr_audit_writable(svc->audit, why, sizeof(why)))
        return 0;
    return clr_error_set(err, CLR_E_UNAVAILABLE, 0, "%s", why);
}

/* Records a file action; the action already happened, so the error is the caller's to report. */
static int audit_file(clr_service *svc, const char *actor, const char *id, const char *action,
                      const char *path, int64_t size, const char *sha, clr_error *err)
{
    json_t *d = json_pack("{s:o, s:I, s:s?}", "path", name_json(path), "size", (json_int_t)size,
                          "sha256", sha && sha[0] ? sha : NULL);
    int rc = clr_audit_append(svc->audit, actor, id, action, "ok", d, err);
    json_decref(d);
    return rc;
}

int clr_service_file_put(clr_service *svc, const char *id, const char *rel, int src_fd,
                         const char *actor, json_t **out, clr_error *err)
{
    _cleanup_close_ int root = -1;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, false, &root, err) < 0 ||
        audit_ready(svc, err) < 0) {
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "file.upload", err);
        return -1;
    }
    char sha[65];
    sha256_fd(src_fd, sha);
    struct stat st;
    int64_t size = fstat(src_fd, &st) == 0 ? (int64_t)st.st_size : -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    int rc = clr_files_write(root, rel, src_fd, NULL, 0, 0644, &lim, err);
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "file.upload", err);
        return -1;
    }
    if (audit_file(svc, actor, id, "file.upload", rel, size, sha, err) < 0)
        return -1;
    *out = json_pack("{s:o, s:I, s:s}", "path", name_json(rel), "size", (json_int_t)size, "sha256",
                     sha);
    return 0;
}

int clr_service_file_get(clr_service *svc, const char *id, const char *rel, int out_fd,
                         clr_files_budget *budget, const char *actor, uint64_t *size,
                         uint64_t *charged, clr_error *err)
{
    _cleanup_close_ int root = -1;
    *size = 0;
    *charged = 0;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = budget;
    clr_files_report rep;
    int rc = clr_files_read_ext(root, rel, out_fd, &lim, &rep, err);
    *size = rep.bytes;
    *charged = rep.charged;
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "file.download", err);
        return -1;
    }
    char sha[65];
    sha256_fd(out_fd, sha);
    return audit_file(svc, actor, id, "file.download", rel, (int64_t)*size, sha, err);
}

int clr_service_file_list(clr_service *svc, const char *id, const char *rel, json_t **out,
                          clr_error *err)
{
    _cleanup_close_ int root = -1;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) || open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_file_entry *e = NULL;
    size_t n = 0;
    int rc = clr_files_list(&e, &n, root, rel, 100000, err);
    if (rc < 0)
        return -1;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char mode[8];
        snprintf(mode, sizeof(mode), "%04o", e[i].mode & 07777);
        json_array_append_new(a, json_pack("{s:o, s:s, s:I, s:s, s:I, s:o?}", "name",
                                           name_json(e[i].name),
                                           "type", clr_files_type_name(e[i].type), "size",
                                           (json_int_t)e[i].size, "mode", mode, "mtime",
                                           (json_int_t)e[i].mtime, "target",
                                           name_json(e[i].link_target)));
    }
    clr_files_entries_free(e, n);
    *out = json_pack("{s:o, s:o}", "path", name_json(rel), "entries", a);
    return 0;
}

int clr_service_file_delete(clr_service *svc, const char *id, const char *rel, bool recursive,
                            const char *actor, clr_error *err)
{
    _cleanup_close_ int root = -1;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, false, &root, err) < 0)
        return -1;
    if (audit_ready(svc, err) < 0) {
        svc_audit_failure(svc, actor, id, "file.delete", err);
        return -1;
    }
    int rc = clr_files_delete(root, rel, recursive, err);
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "file.delete", err);
        return -1;
    }
    return audit_file(svc, actor, id, "file.delete", rel, -1, NULL, err);
}

int clr_service_archive_put(clr_service *svc, const char *id, const char *rel, int tar_fd,
                            const char *actor, json_t **out, clr_error *err)
{
    _cleanup_close_ int root = -1;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) || open_workspace(svc, id, false, &root, err) < 0 ||
        audit_ready(svc, err) < 0) {
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "archive.upload", err);
        return -1;
    }
    char sha[65];
    sha256_fd(tar_fd, sha);
    clr_files_report rep;
    memset(&rep, 0, sizeof(rep));
    int rc = clr_files_extract_tar(root, rel, tar_fd, NULL, &rep, err);
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "archive.upload", err);
        return -1;
    }
    json_t *d = json_pack("{s:o, s:I, s:I, s:I, s:I, s:s}", "path", name_json(rel), "entries",
                          (json_int_t)rep.entries, "files", (json_int_t)rep.files, "bytes",
                          (json_int_t)rep.bytes, "symlinks", (json_int_t)rep.symlinks, "sha256",
                          sha);
    rc = clr_audit_append(svc->audit, actor, id, "archive.upload", "ok", d, err);
    if (rc < 0) {
        json_decref(d);
        return -1;
    }
    *out = d;
    return 0;
}

int clr_service_archive_get(clr_service *svc, const char *id, const char *rel, int out_fd,
                            clr_files_budget *budget, const char *actor, uint64_t *charged,
                            clr_error *err)
{
    _cleanup_close_ int root = -1;
    *charged = 0;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) ||
        open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = budget;
    clr_files_report rep;
    memset(&rep, 0, sizeof(rep));
    int rc = clr_files_create_tar(root, rel, out_fd, &lim, &rep, err);
    *charged = rep.charged;
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "archive.download", err);
        return -1;
    }
    char sha[65];
    sha256_fd(out_fd, sha);
    json_t *d = json_pack("{s:o, s:I, s:I, s:I, s:s}", "path", name_json(rel), "entries",
                          (json_int_t)rep.entries, "bytes", (json_int_t)rep.bytes, "skipped",
                          (json_int_t)rep.skipped, "sha256", sha);
    rc = clr_audit_append(svc->audit, actor, id, "archive.download", "ok", d, err);
    json_decref(d);
    return rc;
}
