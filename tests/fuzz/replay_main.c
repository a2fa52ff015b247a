/*
 * replay_main.c - runs a libFuzzer harness over every file of its seed
 * corpus once, for builds without libFuzzer (gcc). Exits non-zero only by
 * crashing, like the fuzzer itself.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (f == NULL)
		return -1;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
		fclose(f);
		return -1;
	}
	rewind(f);
	buf = malloc((size_t)n + 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	return 0;
}

int
main(int argc, char **argv)
{
	DIR *d;
	struct dirent *e;
	char path[4096];
	int count = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	if ((d = opendir(argv[1])) == NULL) {
		perror(argv[1]);
		return 2;
	}
	while ((e = readdir(d)) != NULL && count < 100000) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
		if (replay_file(path) == 0)
			count++;
	}
	closedir(d);
	printf("replayed %d inputs from %s\n", count, argv[1]);
	return count > 0 ? 0 : 1;
}
