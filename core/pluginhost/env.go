package pluginhost

import "os"

// envAllowList names the only variables of the host's environment that
// plugin processes get.
var envAllowList = []string{"PATH", "TZ", "LANG", "LC_ALL"}

// EnvAllowList returns the names of the only variables of the host's
// environment that plugin processes get, of every scope, builtin or not:
// where to find programs, the time zone and the locale. Nothing else of the
// host's environment (credentials, tokens, proxies, KIGUMI_* settings)
// reaches a plugin; go-plugin adds its own handshake variables.
func EnvAllowList() []string { return append([]string(nil), envAllowList...) }

// defaultPath is the PATH of plugins when the host has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// pluginEnv returns the allow-listed variables of the host's environment,
// with PATH set to defaultPath when the host has none.
func pluginEnv() []string {
	var env []string
	for _, k := range envAllowList {
		v, ok := os.LookupEnv(k)
		if k == "PATH" && (!ok || v == "") {
			v, ok = defaultPath, true
		}
		if ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
