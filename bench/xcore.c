// xcore measures how fast data one CPU has just written reaches another
// CPU: the path every ring hop between ranks on different CPUs takes (a
// sender writes a payload into shared memory, the receiver reads it). It
// isolates the machine from vccl when the raw ring's time varies from one
// start to the next (bench/README.md, "Seventh round").
//
// A writer thread pinned to CPU W fills 256 KiB blocks of a 2 MiB region in
// turn; the main thread, pinned to CPU R, sums each block once it is
// written. At most half the blocks are ahead of the reader. It prints the
// reader's GB/s for each of WINDOWS windows of 0.25 s.
//
// Build and run (gcc is installed by scripts/setup.sh):
//
//	gcc -O2 -pthread -o /tmp/xcore bench/xcore.c
//	/tmp/xcore 0 1    # written on CPU 0, read on CPU 1
//	/tmp/xcore 0 0    # both on CPU 0: the same-CPU reference
//	/tmp/xcore 0 1 8  # 8 windows
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BLOCK = 256 << 10, BLOCKS = 8 };
static const double WINDOW_S = 0.25;

static char *region;
static atomic_long written, readDone;
static atomic_int stop;
static int writerCPU, readerCPU;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static int pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *writer(void *arg)
{
	(void)arg;
	if (pin(writerCPU) != 0) {
		fprintf(stderr, "xcore: cannot pin the writer to CPU %d\n", writerCPU);
		exit(2);
	}
	for (long i = 0; !atomic_load(&stop);) {
		while (i - atomic_load(&readDone) >= BLOCKS / 2 && !atomic_load(&stop))
			sched_yield();
		memset(region + (i % BLOCKS) * BLOCK, (int)i, BLOCK);
		atomic_store(&written, ++i);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: xcore WRITER_CPU READER_CPU [WINDOWS]\n");
		return 2;
	}
	writerCPU = atoi(argv[1]);
	readerCPU = atoi(argv[2]);
	int windows = argc > 3 ? atoi(argv[3]) : 4;
	region = aligned_alloc(4096, BLOCKS * BLOCK);
	if (region == NULL || windows < 1) {
		fprintf(stderr, "xcore: bad window count or out of memory\n");
		return 2;
	}
	memset(region, 0, BLOCKS * BLOCK);
	if (pin(readerCPU) != 0) {
		fprintf(stderr, "xcore: cannot pin the reader to CPU %d\n", readerCPU);
		return 2;
	}
	pthread_t w;
	pthread_create(&w, NULL, writer, NULL);
	volatile long sink = 0;
	long i = 0;
	for (int win = 0; win < windows; win++) {
		double t0 = now(), t1;
		long blocks = 0;
		do {
			while (atomic_load(&written) <= i)
				sched_yield();
			const long *p = (const long *)(region + (i % BLOCKS) * BLOCK);
			long s = 0;
			for (int k = 0; k < BLOCK / 8; k++)
				s += p[k];
			sink += s;
			atomic_store(&readDone, ++i);
			blocks++;
			t1 = now();
		} while (t1 - t0 < WINDOW_S);
		printf("%.2f ", blocks * (double)BLOCK / (t1 - t0) / 1e9);
		fflush(stdout);
	}
	printf("\n");
	atomic_store(&stop, 1);
	pthread_join(w, NULL);
	return 0;
}
