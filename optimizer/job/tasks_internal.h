/* Task kinds and the plan driver: shared helpers. */
#ifndef BITPLAN_TASKS_INTERNAL_H
#define BITPLAN_TASKS_INTERNAL_H

#include <msgpack.h>

#include "bitplan/error.h"

char *bp__mp_strdup(const msgpack_object *map, const char *key, int required, bp_error *err);
void bp__pack_str(msgpack_packer *pk, const char *key, const char *value);
void bp__pack_key(msgpack_packer *pk, const char *key);
void bp__tasks_register_builtin(void);
void bp__tasks_drop_caches(void);

#endif
