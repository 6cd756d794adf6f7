/* lib/files_io.c: the download spool keeps holes and charges a shared budget. */
#include "test_files_fixture.h"

/* Issue #16 item 9: a download's spool keeps a sparse file's holes (a file of holes costs the
 * host no disk) and charges only what it writes to a shared budget, which refuses past it. */
static void make_holey(const char *path, off_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "HEAD", 4), 4);
    assert_int_equal(ftruncate(fd, size - 4), 0);
    assert_int_equal(pwrite(fd, "TAIL", 4, size - 4), 4);
    close(fd);
}

static off_t fd_allocated(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_blocks * 512;
}

static void test_spool_keeps_holes_and_charges_budget(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    const off_t size = (off_t)64 << 20;
    char p[256];
    WS(f, p, "holey");
    make_holey(p, size);
    WS(f, p, "arch");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "arch/holey");
    make_holey(p, size);
    clr_files_budget budget = {.max = 1 << 20, .name = "max_download_total"};
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = &budget;

    _cleanup_close_ int out = mem_fd();
    clr_files_report rep;
    assert_int_equal(clr_files_read_ext(f->root, "holey", out, &lim, &rep, &err), 0);
    assert_int_equal(rep.bytes, (uint64_t)size);
    assert_int_equal(fd_size(out), size);
    char ends[9] = {0};
    assert_int_equal(pread(out, ends, 4, 0), 4);
    assert_int_equal(pread(out, ends + 4, 4, size - 4), 4);
    assert_string_equal(ends, "HEADTAIL");
    char mid[4096], zeros[4096] = {0};
    assert_int_equal(pread(out, mid, sizeof(mid), size / 2), (ssize_t)sizeof(mid));
    assert_memory_equal(mid, zeros, sizeof(mid));
    print_message("read: %lld bytes, %lld allocated, %llu charged\n", (long long)size,
                  (long long)fd_allocated(out), (unsigned long long)rep.charged);
    assert_true(fd_allocated(out) <= 64 * 1024);
    assert_true(rep.charged > 0 && rep.charged <= 2 * 4096);
    assert_int_equal(atomic_load(&budget.used), rep.charged);
    uint64_t held = rep.charged;

    /* An archive of it: holes too, and the bytes extract back to the same file. */
    _cleanup_close_ int tar = mem_fd();
    assert_int_equal(clr_files_create_tar(f->root, "arch", tar, &lim, &rep, &err), 0);
    assert_true(fd_size(tar) > size);
    assert_true(fd_allocated(tar) <= 64 * 1024);
    assert_true(rep.charged > 0 && rep.charged <= 64 * 1024);
    held += rep.charged;
    assert_int_equal(atomic_load(&budget.used), held);
    assert_int_equal(lseek(tar, 0, SEEK_SET), 0);
    WS(f, p, "back");
    assert_int_equal(mkdir(p, 0755), 0);
    if (clr_files_extract_tar(f->root, "back", tar, NULL, NULL, &err) < 0)
        fail_msg("extract: %s", err.message);
    WS(f, p, "back/holey");
    int back = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(back >= 0);
    assert_int_equal(fd_size(back), size);
    memset(ends, 0, sizeof(ends));
    assert_int_equal(pread(back, ends, 4, 0), 4);
    assert_int_equal(pread(back, ends + 4, 4, size - 4), 4);
    assert_string_equal(ends, "HEADTAIL");
    close(back);

    /* Real bytes past what is left: refused, naming the setting; the charge is reported. */
    char dense[256 * 1024];
    memset(dense, 'd', sizeof(dense));
    WS(f, p, "dense");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(write(fd, dense, sizeof(dense)), (ssize_t)sizeof(dense));
    close(fd);
    _cleanup_close_ int out2 = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "dense", out2, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "max_download_total"));
    assert_true(held + rep.charged <= budget.max);
    assert_int_equal(atomic_load(&budget.used), held + rep.charged);
    assert_int_equal(fd_size(out2), (off_t)rep.charged);
    _cleanup_close_ int tar2 = mem_fd();
    uint64_t before = atomic_load(&budget.used);
    assert_int_equal(clr_files_create_tar(f->root, "", tar2, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "max_download_total"));
    assert_int_equal(atomic_load(&budget.used), before + rep.charged);

    /* Given back, the budget is whole again and the same read fits. */
    clr_files_budget_release(&budget, atomic_load(&budget.used));
    assert_int_equal(atomic_load(&budget.used), 0);
    budget.max = 4 << 20;
    _cleanup_close_ int out3 = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "dense", out3, &lim, &rep, &err), 0);
    assert_int_equal(rep.charged, 2u << 20);
    assert_int_equal(fd_allocated(out3), 2 << 20);
}

/* The budget: a read charges exactly the bytes it wrote, release gives back exactly what it is
 * told, and a read that would pass max is refused before it writes. */
static void test_budget_charge_and_release_values(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "ten");
    put_file(p, "0123456789", 0644);
    clr_files_budget budget = {.max = 15, .name = "max_download_total"};
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = &budget;
    clr_files_report rep;
    _cleanup_close_ int out = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "ten", out, &lim, &rep, &err), 0);
    assert_int_equal(rep.bytes, 10);
    assert_int_equal(rep.charged, 10);
    assert_int_equal(atomic_load(&budget.used), 10);
    _cleanup_close_ int out2 = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "ten", out2, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "max_download_total"));
    assert_int_equal(rep.charged, 0);
    assert_int_equal(fd_size(out2), 0);
    assert_int_equal(atomic_load(&budget.used), 10);
    clr_files_budget_release(&budget, 4);
    assert_int_equal(atomic_load(&budget.used), 6);
    clr_files_budget_release(&budget, 0);
    assert_int_equal(atomic_load(&budget.used), 6);
    clr_files_budget_release(NULL, 6);
    clr_files_budget_release(&budget, 6);
    assert_int_equal(atomic_load(&budget.used), 0);
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_spool_keeps_holes_and_charges_budget),
        T(test_budget_charge_and_release_values),
#undef T
    };
    return cmocka_run_group_tests_name("files_io", tests, NULL, NULL);
}
