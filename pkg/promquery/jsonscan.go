package promquery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// scanner reads one JSON text from a stream, a token at a time, so that an
// answer of hundreds of thousands of series is never held whole: only the
// buffer and the token being read are. It validates as it reads; anything
// that is not JSON is an error naming the byte offset.
type scanner struct {
	r io.Reader
	// buf[pos:lim] is read and not yet consumed; base is the answer's
	// offset of buf[0]; rerr is the reader's error once it returned one.
	buf      []byte
	pos, lim int
	base     int64
	rerr     error
	// Scratch space, each for one use so that none overwrites another:
	// the raw text of a string read on the slow path, a number's text,
	// short values the caller reads (out), and object keys (valid until
	// the key's value is read).
	tmp, num, out, key []byte
	// longKey says the last key was longer than maxKeyBytes and passed
	// on empty.
	longKey bool
}

// maxDepth bounds nesting in values skipped unread.
const maxDepth = 1000

func newScanner(r io.Reader) *scanner {
	return &scanner{r: r, buf: make([]byte, 64<<10)}
}

// fill reads more of the answer after what is buffered, keeping the
// unconsumed bytes. It fails only when nothing more can be read.
func (s *scanner) fill() error {
	if s.rerr != nil {
		return s.rerr
	}
	if s.pos > 0 {
		s.lim = copy(s.buf, s.buf[s.pos:s.lim])
		s.base += int64(s.pos)
		s.pos = 0
	}
	for range 100 {
		n, err := s.r.Read(s.buf[s.lim:])
		s.lim += n
		if err != nil {
			s.rerr = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	s.rerr = io.ErrNoProgress
	return s.rerr
}

// readByte consumes one byte.
func (s *scanner) readByte() (byte, error) {
	if s.pos == s.lim {
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	c := s.buf[s.pos]
	s.pos++
	return c, nil
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("decoding the answer at byte %d: %s", s.base+int64(s.pos), fmt.Sprintf(format, args...))
}

// eof turns io.EOF into an error about a truncated answer.
func (s *scanner) eof(err error) error {
	if errors.Is(err, io.EOF) {
		return s.errorf("unexpected end of the answer")
	}
	return fmt.Errorf("reading the answer: %w", err)
}

// discard consumes n buffered bytes.
func (s *scanner) discard(n int) { s.pos += n }

// peek skips whitespace and returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	for {
		for s.pos < s.lim {
			switch c := s.buf[s.pos]; c {
			case ' ', '\t', '\n', '\r':
				s.pos++
			default:
				return c, nil
			}
		}
		if err := s.fill(); err != nil {
			return 0, s.eof(err)
		}
	}
}

// next skips whitespace and consumes the next byte.
func (s *scanner) next() (byte, error) {
	c, err := s.peek()
	if err == nil {
		s.discard(1)
	}
	return c, err
}

func (s *scanner) expect(want byte) error {
	c, err := s.next()
	if err != nil {
		return err
	}
	if c != want {
		return s.errorf("found %q, want %q", c, want)
	}
	return nil
}

// end checks that nothing but whitespace follows the value.
func (s *scanner) end() error {
	c, err := s.peek()
	if err == nil {
		return s.errorf("found %q after the answer", c)
	}
	if errors.Is(s.rerr, io.EOF) && s.pos == s.lim {
		return nil
	}
	return err
}

// null consumes a null if one is next.
func (s *scanner) null() (bool, error) {
	c, err := s.peek()
	if err != nil || c != 'n' {
		return false, err
	}
	return true, s.literal("null")
}

func (s *scanner) literal(word string) error {
	for s.lim-s.pos < len(word) {
		if err := s.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				return s.errorf("truncated literal, want %s", word)
			}
			return s.eof(err)
		}
	}
	if b := s.buf[s.pos : s.pos+len(word)]; string(b) != word {
		return s.errorf("found %q, want %s", b, word)
	}
	s.discard(len(word))
	return nil
}

// str reads a string and appends its value to dst, at most limit bytes of
// it: a longer string is read to its end (and validated) but not kept, and
// fit is false with dst as it came. Plain ASCII without escapes, which is
// all an answer usually holds, is copied straight from the buffer; a
// string with escapes, controls or other bytes is unquoted by
// encoding/json, so it reads exactly as it would there (its raw text
// counts against limit).
func (s *scanner) str(dst []byte, limit int) (out []byte, fit bool, err error) {
	if err := s.expect('"'); err != nil {
		return dst, false, err
	}
	start := len(dst)
	for {
		buf, err := s.window()
		if err != nil {
			return dst[:start], false, err
		}
		i := 0
		for i < len(buf) {
			c := buf[i]
			if c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
				break
			}
			i++
		}
		if len(dst)-start+i > limit {
			return dst[:start], false, s.finishStr(strState{})
		}
		dst = append(dst, buf[:i]...)
		s.discard(i)
		if i == len(buf) {
			continue
		}
		if buf[i] == '"' {
			s.discard(1)
			return dst, true, nil
		}
		return s.slowStr(dst, start, limit)
	}
}

// window returns the buffered bytes, reading more if none are.
func (s *scanner) window() ([]byte, error) {
	if s.pos == s.lim {
		if err := s.fill(); err != nil {
			return nil, s.eof(err)
		}
	}
	return s.buf[s.pos:s.lim], nil
}

// slowStr finishes a string whose plain prefix is dst[start:] and whose
// rest holds an escape, a control or a non-ASCII byte.
func (s *scanner) slowStr(dst []byte, start, limit int) ([]byte, bool, error) {
	raw := append(s.tmp[:0], '"')
	raw = append(raw, dst[start:]...)
	var st strState
	for {
		if len(raw) > limit+2 {
			s.tmp = raw[:0]
			return dst[:start], false, s.finishStr(st)
		}
		c, err := s.readByte()
		if err != nil {
			return dst[:start], false, s.eof(err)
		}
		raw = append(raw, c)
		end, err := st.step(c)
		if err != nil {
			return dst[:start], false, s.errorf("bad string: %v", err)
		}
		if end {
			s.tmp = raw[:0]
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return dst[:start], false, s.errorf("bad string: %v", err)
			}
			if len(v) > limit {
				return dst[:start], false, nil
			}
			return append(dst[:start], v...), true, nil
		}
	}
}

// finishStr reads the rest of a string, keeping nothing.
func (s *scanner) finishStr(st strState) error {
	for {
		c, err := s.readByte()
		if err != nil {
			return s.eof(err)
		}
		end, err := st.step(c)
		if err != nil {
			return s.errorf("bad string: %v", err)
		}
		if end {
			return nil
		}
	}
}

// strState follows a string's bytes after its opening quote far enough
// to find its end and to refuse what encoding/json refuses: control
// characters and escapes JSON does not have. (Invalid UTF-8 is not
// refused there but replaced.)
type strState struct {
	escaped bool
	hex     int // hex digits still due after \u
}

// step reads one byte and reports whether it closed the string.
func (st *strState) step(c byte) (bool, error) {
	switch {
	case st.hex > 0:
		if !isHex(c) {
			return false, errors.New("invalid \\u escape")
		}
		st.hex--
	case st.escaped:
		st.escaped = false
		switch c {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			st.hex = 4
		default:
			return false, fmt.Errorf("invalid escape \\%c", c)
		}
	case c == '\\':
		st.escaped = true
	case c == '"':
		return true, nil
	case c < 0x20:
		return false, fmt.Errorf("control character %#x", c)
	}
	return false, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// number reads a number and returns its text, valid by JSON's grammar.
func (s *scanner) number() ([]byte, error) {
	if _, err := s.peek(); err != nil {
		return nil, err
	}
	raw := s.num[:0]
	for {
		if s.pos == s.lim {
			if err := s.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, s.eof(err)
			}
		}
		c := s.buf[s.pos]
		if !isNumberByte(c) {
			break
		}
		raw = append(raw, c)
		s.discard(1)
		if len(raw) > 64 {
			return nil, s.errorf("number too long")
		}
	}
	s.num = raw
	if !validNumber(raw) {
		return nil, s.errorf("bad number %q", raw)
	}
	return raw, nil
}

// isNumberByte reports whether c can be part of a JSON number.
func isNumberByte(c byte) bool {
	switch {
	case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
		return true
	}
	return false
}

// validNumber reports whether b is a JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// maxKeyBytes bounds the keys object passes on: a longer one is passed
// empty, with longKey set. Label names are keys, and a tenant's target
// chooses its own.
const maxKeyBytes = maxSeriesBytes

// object reads an object, calling field with each key to consume that
// key's value. The key is valid until field reads anything.
func (s *scanner) object(field func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	c, err := s.peek()
	if err != nil {
		return err
	}
	if c == '}' {
		s.discard(1)
		return nil
	}
	for {
		var fit bool
		if s.key, fit, err = s.str(s.key[:0], maxKeyBytes); err != nil {
			return err
		}
		s.longKey = !fit
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := field(s.key); err != nil {
			return err
		}
		c, err := s.next()
		if err != nil {
			return err
		}
		switch c {
		case ',':
		case '}':
			return nil
		default:
			return s.errorf("found %q in an object, want ',' or '}'", c)
		}
	}
}

// array reads an array, calling elem to consume each element.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	c, err := s.peek()
	if err != nil {
		return err
	}
	if c == ']' {
		s.discard(1)
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		c, err := s.next()
		if err != nil {
			return err
		}
		switch c {
		case ',':
		case ']':
			return nil
		default:
			return s.errorf("found %q in an array, want ',' or ']'", c)
		}
	}
}

// skip reads and validates a value of any shape, keeping nothing.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.errorf("nested deeper than %d", maxDepth)
	}
	c, err := s.peek()
	if err != nil {
		return err
	}
	switch {
	case c == '{':
		return s.object(func([]byte) error { return s.skip(depth + 1) })
	case c == '[':
		return s.array(func() error { return s.skip(depth + 1) })
	case c == '"':
		if err := s.expect('"'); err != nil {
			return err
		}
		return s.finishStr(strState{})
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		_, err := s.number()
		return err
	default:
		return s.errorf("found %q, want a value", c)
	}
}
