package gateway

import "net/http"

// AdminHTTPServer is the admin listener's http.Server, once Serve has
// started it (after Ready).
func AdminHTTPServer(g *Gateway) *http.Server { return g.adm.srv }
