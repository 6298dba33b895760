package peer

import (
	"strings"
	"testing"
)

func TestParseTicket(t *testing.T) {
	token, _, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	fp := "sha256:" + strings.Repeat("ab", 32)
	valid := "cargo://vol-1.a_b:" + token + "@198.18.0.1:7450?fp=" + fp

	cases := []struct {
		name string
		in   string
		want *Ticket // nil: must fail
	}{
		{"valid IPv4", valid, &Ticket{Addr: "198.18.0.1:7450", ExportID: "vol-1.a_b", Token: token, Fingerprint: fp}},
		{"valid IPv6", "cargo://e:" + token + "@[2001:db8::1]:1?fp=" + fp, &Ticket{Addr: "[2001:db8::1]:1", ExportID: "e", Token: token, Fingerprint: fp}},
		{"valid host name", "cargo://e:" + token + "@src-1.example.com:65535?fp=" + fp, &Ticket{Addr: "src-1.example.com:65535", ExportID: "e", Token: token, Fingerprint: fp}},
		{"empty", "", nil},
		{"wrong scheme", "https://e:" + token + "@h:1?fp=" + fp, nil},
		{"upper-case scheme", "CARGO://e:" + token + "@h:1?fp=" + fp, nil},
		{"missing userinfo", "cargo://198.18.0.1:7450?fp=" + fp, nil},
		{"missing token", "cargo://e@198.18.0.1:7450?fp=" + fp, nil},
		{"empty token", "cargo://e:@198.18.0.1:7450?fp=" + fp, nil},
		{"empty export id", "cargo://:" + token + "@198.18.0.1:7450?fp=" + fp, nil},
		{"export id with slash", "cargo://a/b:" + token + "@198.18.0.1:7450?fp=" + fp, nil},
		{"export id starting with dot", "cargo://..:" + token + "@198.18.0.1:7450?fp=" + fp, nil},
		{"export id escaped", "cargo://a%2Fb:" + token + "@198.18.0.1:7450?fp=" + fp, nil},
		{"missing fingerprint", "cargo://e:" + token + "@198.18.0.1:7450", nil},
		{"empty query", "cargo://e:" + token + "@198.18.0.1:7450?", nil},
		{"fingerprint without prefix", "cargo://e:" + token + "@198.18.0.1:7450?fp=" + strings.Repeat("ab", 32), nil},
		{"fingerprint upper-case hex", "cargo://e:" + token + "@198.18.0.1:7450?fp=sha256:" + strings.Repeat("AB", 32), nil},
		{"fingerprint too short", "cargo://e:" + token + "@198.18.0.1:7450?fp=sha256:abcd", nil},
		{"fingerprint md5", "cargo://e:" + token + "@198.18.0.1:7450?fp=md5:" + strings.Repeat("ab", 16), nil},
		{"extra query", valid + "&x=1", nil},
		{"fragment", valid + "#frag", nil},
		{"path", "cargo://e:" + token + "@198.18.0.1:7450/x?fp=" + fp, nil},
		{"missing port", "cargo://e:" + token + "@198.18.0.1?fp=" + fp, nil},
		{"port zero", "cargo://e:" + token + "@198.18.0.1:0?fp=" + fp, nil},
		{"port too large", "cargo://e:" + token + "@198.18.0.1:65536?fp=" + fp, nil},
		{"port leading zero", "cargo://e:" + token + "@198.18.0.1:07450?fp=" + fp, nil},
		{"port sign", "cargo://e:" + token + "@198.18.0.1:+7450?fp=" + fp, nil},
		{"port not a number", "cargo://e:" + token + "@198.18.0.1:http?fp=" + fp, nil},
		{"IPv6 without brackets", "cargo://e:" + token + "@2001:db8::1:7450?fp=" + fp, nil},
		{"IPv4 in brackets", "cargo://e:" + token + "@[1.2.3.4]:7450?fp=" + fp, nil},
		{"IPv6 zone", "cargo://e:" + token + "@[fe80::1%25eth0]:7450?fp=" + fp, nil},
		{"bad host", "cargo://e:" + token + "@bad_host:7450?fp=" + fp, nil},
		{"empty host", "cargo://e:" + token + "@:7450?fp=" + fp, nil},
		{"two at signs", "cargo://e:" + token + "@x@198.18.0.1:7450?fp=" + fp, nil},
		{"token too short", "cargo://e:" + token[:42] + "@198.18.0.1:7450?fp=" + fp, nil},
		{"token too long", "cargo://e:" + token + "A@198.18.0.1:7450?fp=" + fp, nil},
		{"token with plus", "cargo://e:+" + token[1:] + "@198.18.0.1:7450?fp=" + fp, nil},
		{"token with slash", "cargo://e:/" + token[1:] + "@198.18.0.1:7450?fp=" + fp, nil},
		{"token with padding", "cargo://e:" + token[:42] + "=@198.18.0.1:7450?fp=" + fp, nil},
		{"token with percent", "cargo://e:%41" + token[3:] + "@198.18.0.1:7450?fp=" + fp, nil},
		{"token with colon", "cargo://e:" + token[:20] + ":" + token[21:] + "@198.18.0.1:7450?fp=" + fp, nil},
		{"too long", "cargo://" + strings.Repeat("a", 2000), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTicket(tc.in)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted %q as %+v", tc.in, got)
				}
				if strings.Contains(err.Error(), token) {
					t.Fatalf("error reveals the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != *tc.want {
				t.Fatalf("got %+v, want %+v", got, *tc.want)
			}
			if got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
			again, err := ParseTicket(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
			red := got.Redacted()
			if strings.Contains(red, token) || !strings.Contains(red, "xxxxx") || !strings.Contains(red, got.Addr) {
				t.Fatalf("Redacted() = %q", red)
			}
		})
	}
}

func TestToken(t *testing.T) {
	tok, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !ValidToken(tok) || len(tok) != 43 {
		t.Fatalf("token %q invalid", tok)
	}
	if HashToken(tok) != hash {
		t.Fatal("hash mismatch")
	}
	tok2, _, _ := NewToken()
	if tok2 == tok {
		t.Fatal("tokens repeat")
	}
}
