/*
 * LD_PRELOAD shim: makes this host's ptrace(2) behave, for the XSAVE register set, like the
 * ptrace of a host whose XSAVE area is LVSAGENT_FAKE_XSAVE bytes (11008 on a CPU with AMX).
 *
 * Why: the lab kernel must boot on every CPU, and nobody chooses which CPU runs CI. What
 * differs between CPUs, for user-mode Linux, is one rule of the host kernel: it takes
 * PTRACE_SETREGSET(NT_X86_XSTATE) only with a buffer of exactly its own XSAVE size (shorter is
 * EFAULT, longer is cut to that size), and PTRACE_GETREGSET shortens iov_len to it. This shim
 * applies that rule for a larger size than the CPU's own, so a test on any machine meets what
 * UML meets on a bigger one: the AMX area reads back as zeros and must be written back whole,
 * with no AMX component marked in use (a host without AMX permission for the tracee refuses
 * that with EINVAL).
 *
 * Only UML's own calls pass through it (UML calls ptrace through libc); its guest processes
 * are clones, not exec'd, and never see it.
 *
 * Build: gcc -shared -fPIC -O2 -o xsave-shim.so xsave-shim.c -ldl
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/elf.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define PROBE_BYTES 65536
#define XSTATE_BV_OFFSET 512

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static ptrace_fn real_ptrace;
static size_t fake_size;  /* the simulated host's XSAVE size; 0: pass everything through */
static size_t real_size;  /* this host's own, probed on the first XSAVE call */
static unsigned char real_buf[PROBE_BYTES];
static unsigned long long real_features;  /* XCR0: the components this host has */

static void setup(void)
{
	const char *text;

	if (real_ptrace)
		return;
	real_ptrace = (ptrace_fn) dlsym(RTLD_NEXT, "ptrace");
	text = getenv("LVSAGENT_FAKE_XSAVE");
	fake_size = text ? strtoul(text, NULL, 10) : 0;
}

/* This host's own XSAVE size, read from the tracee ``pid`` (any tracee will do). */
static int probe(pid_t pid)
{
	struct iovec iov = { real_buf, sizeof(real_buf) };
	unsigned int eax, ebx, ecx, edx;

	if (real_size)
		return 0;
	if (real_ptrace(PTRACE_GETREGSET, pid, (void *) NT_X86_XSTATE, &iov) < 0)
		return -1;
	real_size = iov.iov_len;
	__cpuid_count(0xd, 0, eax, ebx, ecx, edx);
	real_features = ((unsigned long long) edx << 32) | eax;
	return 0;
}

static long xstate_get(pid_t pid, struct iovec *iov)
{
	struct iovec real = { real_buf, real_size };
	size_t n;

	if (real_ptrace(PTRACE_GETREGSET, pid, (void *) NT_X86_XSTATE, &real) < 0)
		return -1;
	memset(real_buf + real_size, 0, fake_size - real_size);
	n = iov->iov_len < fake_size ? iov->iov_len : fake_size;
	memcpy(iov->iov_base, real_buf, n);
	iov->iov_len = n;
	return 0;
}

static long xstate_set(pid_t pid, struct iovec *iov)
{
	struct iovec real = { iov->iov_base, real_size };
	unsigned long long bv;

	if ((iov->iov_len < fake_size ? iov->iov_len : fake_size) != fake_size) {
		errno = EFAULT;  /* the host kernel's answer to a short buffer */
		return -1;
	}
	memcpy(&bv, (unsigned char *) iov->iov_base + XSTATE_BV_OFFSET, sizeof(bv));
	if (bv & ~real_features) {
		errno = EINVAL;  /* a component beyond this host's, e.g. AMX, marked in use */
		return -1;
	}
	return real_ptrace(PTRACE_SETREGSET, pid, (void *) NT_X86_XSTATE, &real);
}

long ptrace(enum __ptrace_request request, ...)
{
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	setup();
	if (fake_size && (long) addr == NT_X86_XSTATE &&
	    (request == PTRACE_GETREGSET || request == PTRACE_SETREGSET)) {
		if (probe(pid) < 0)
			return -1;
		if (fake_size < real_size) {
			errno = EINVAL;  /* a smaller host than this one cannot be simulated */
			return -1;
		}
		if (request == PTRACE_GETREGSET)
			return xstate_get(pid, data);
		return xstate_set(pid, data);
	}
	return real_ptrace(request, pid, addr, data);
}
