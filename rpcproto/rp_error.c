/* rp_error.c - names and messages for enum rp_err. */
#include <string.h>

#include "rp_error.h"

static const struct {
	int code;
	const char *name;
	const char *msg;
} rp_err_table[] = {
#define RP_X_ROW(e, code, name, msg) {code, name, msg},
    RP_ERR_LIST(RP_X_ROW)
#undef RP_X_ROW
};

#define RP_ERR_COUNT (sizeof(rp_err_table) / sizeof(rp_err_table[0]))

const char *
rp_err_name(int code)
{
	for (size_t i = 0; i < RP_ERR_COUNT; i++)
		if (rp_err_table[i].code == code)
			return rp_err_table[i].name;
	return "unknown_error";
}

const char *
rp_err_message(int code)
{
	for (size_t i = 0; i < RP_ERR_COUNT; i++)
		if (rp_err_table[i].code == code)
			return rp_err_table[i].msg;
	return "unknown error";
}

int
rp_err_from_name(const char *name)
{
	for (size_t i = 0; name != NULL && i < RP_ERR_COUNT; i++)
		if (strcmp(rp_err_table[i].name, name) == 0)
			return rp_err_table[i].code;
	return RP_ERR_INTERNAL;
}
