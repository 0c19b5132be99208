// Shows the error line after a failed sign-in (/ui/login?error=1). No inline scripts: the CSP forbids them.
"use strict";
if (new URLSearchParams(location.search).has("error")) {
  document.getElementById("login-error").hidden = false;
}
