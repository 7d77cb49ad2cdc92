// Shadows the toolkit's cuda_runtime.h in interpret mode: everything lives in wbcpu.h.
#pragma once
#include "wbcpu.h"
