#include "hm_status.h"

const char *hm_status_name(hm_status s) {
  switch (s) {
#define XX(name, text) case HM_##name: return "HM_" #name;
    HM_STATUS_MAP(XX)
#undef XX
    default: return "HM_UNKNOWN";
  }
}

const char *hm_status_text(hm_status s) {
  switch (s) {
#define XX(name, text) case HM_##name: return text;
    HM_STATUS_MAP(XX)
#undef XX
    default: return "unknown status";
  }
}
