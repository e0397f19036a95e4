/*
 * Loaded with LD_PRELOAD into the gateway by tests/tests/failed_fsync.rs: fsync and fdatasync
 * fail with EIO once the file named by FAIL_FSYNC_WHEN exists, as they do when a disk fails.
 * Everything else, and every fsync before the file appears, goes to the kernel as usual.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("FAIL_FSYNC_WHEN");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
    if (failing()) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd) {
    if (failing()) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}
