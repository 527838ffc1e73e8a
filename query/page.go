package query

import (
	"embed"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// web holds the page at GET / and its assets under /ui/: plain HTML, CSS
// and JavaScript, and uPlot (vendored from the npm registry, MIT; see
// web/vendor/uplot/VERSION). Nothing is fetched from elsewhere: the page
// works offline.
//
//go:embed web
var web embed.FS

// page serves GET / and /ui/<asset>; false when path is neither.
func (s *Server) page(ctx *fasthttp.RequestCtx, p string) bool {
	name := ""
	switch {
	case p == "/":
		name = "web/index.html"
	case strings.HasPrefix(p, "/ui/"):
		rest := strings.TrimPrefix(p, "/ui/")
		if rest == "" || strings.Contains(rest, "..") || path.Clean(rest) != rest {
			return false
		}
		name = "web/" + rest
	default:
		return false
	}
	b, err := fs.ReadFile(web, name)
	if err != nil {
		return false
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	ctx.SetContentType(ct)
	// The assets change with the binary: a browser checks again each load
	// (cheap on loopback), so an upgraded server never runs an old script.
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.Header.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
	ctx.SetBody(b)
	return true
}
