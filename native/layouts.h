/* The KVM struct layouts the addon exports as `layouts` (layouts.c). */
#ifndef PLUGVISOR_LAYOUTS_H_
#define PLUGVISOR_LAYOUTS_H_

#include "addon.h"

/* A frozen object: struct name -> frozen { size, <field>: offset, ... }; NULL with an exception pending. */
napi_value make_layouts(napi_env env);

#endif
