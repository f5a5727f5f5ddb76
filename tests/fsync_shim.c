/*
 * LD_PRELOAD shim around fdatasync(2) for tests/test_durable.py.
 *
 * Every call is logged, after it returns, as one line "<unix ms> <result> <path>"
 * appended to $FSYNC_SHIM_LOG (path from /proc/self/fd).  For files whose path
 * contains $FSYNC_SHIM_MATCH the shim looks into the directory $FSYNC_SHIM_CONTROL
 * first: a file "fail" there makes the call fail with EIO without syncing; a file
 * "delay_ms" holding a number makes it sleep that long before syncing.  The control
 * files are read on every call, so a test switches behaviour per node while the
 * node runs.  Build: cc -shared -fPIC -O2 -o fsync_shim.so fsync_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int (*real_fdatasync)(int);

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int control_file(const char *name, char *buf, size_t len) {
    const char *dir = getenv("FSYNC_SHIM_CONTROL");
    char path[4096];
    if (dir == NULL) {
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = buf != NULL ? read(fd, buf, len - 1) : 0;
    close(fd);
    if (buf != NULL) {
        buf[n > 0 ? n : 0] = '\0';
    }
    return 0;
}

static void log_call(const char *path, int result) {
    const char *log = getenv("FSYNC_SHIM_LOG");
    char line[4200];
    if (log == NULL) {
        return;
    }
    int len = snprintf(line, sizeof line, "%lld %d %s\n", now_ms(), result, path);
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t ignored = write(fd, line, (size_t)len);
        (void)ignored;
        close(fd);
    }
}

int fdatasync(int fd) {
    if (real_fdatasync == NULL) {
        real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    const char *match = getenv("FSYNC_SHIM_MATCH");
    if (match != NULL && *match != '\0' && strstr(path, match) != NULL) {
        char value[32];
        if (control_file("fail", NULL, 0) == 0) {
            log_call(path, -1);
            errno = EIO;
            return -1;
        }
        if (control_file("delay_ms", value, sizeof value) == 0) {
            long ms = strtol(value, NULL, 10);
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
    int result = real_fdatasync(fd);
    int saved = errno;
    log_call(path, result);
    errno = saved;
    return result;
}
