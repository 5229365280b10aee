package adapters

import (
	"context"
	"log/slog"
	"regexp"
)

// Redacted replaces every secret Redact hides.
const Redacted = "xxxxx"

var (
	// A password-like query parameter, up to the next '&' or blank.
	secretParam = regexp.MustCompile(`(?i)((?:password|passwd|pwd|secret|token)=)[^&\s]*`)
	// User info "user:password@": the password runs to the LAST '@' of the
	// text (net/url takes the last '@' of the authority), so a password
	// holding '@', '/', ':', blanks or line breaks is hidden whole. This may
	// hide more than the password, never less.
	userinfoPwd = regexp.MustCompile(`(?s)(://[^:/@]*:).*@`)
)

// Redact hides the passwords in s, a URL or any text holding URLs (an error
// message, a log line): the password of user info becomes "xxxxx", and so
// does the value of password-like query parameters (password, passwd, pwd,
// secret, token, sslpassword, sasl_password, ...). Every error and log line
// of this package goes through it.
func Redact(s string) string {
	s = userinfoPwd.ReplaceAllString(s, "${1}"+Redacted+"@")
	return secretParam.ReplaceAllString(s, "${1}"+Redacted)
}

// RedactError returns err's text with every password-looking part hidden.
func RedactError(err error) string {
	if err == nil {
		return ""
	}
	return Redact(err.Error())
}

// redactedError keeps the chain of err for errors.Is/As while its text is
// redacted.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactHandler redacts the message and every string, error and
// fmt.Stringer attribute of the records it passes on, so a broker library
// that logs its connection URL cannot leak the password.
type redactHandler struct{ h slog.Handler }

func newRedactHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(redactHandler); ok {
		return h
	}
	return redactHandler{h: h}
}

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{h: r.h.WithAttrs(red)}
}

func (r redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h: r.h.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = redactAttr(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, RedactError(x))
		case interface{ String() string }:
			return slog.String(a.Key, Redact(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
