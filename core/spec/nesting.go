package spec

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Limits on a spec's syntax, checked on its tokens before it is parsed: the
// HCL parser recurses once per level of nesting, and a deep enough file
// overflows the stack, which no recover can catch.
const (
	// MaxNesting is how deep brackets, braces, parentheses, templates and
	// chains of unary or conditional operators may nest.
	MaxNesting = 64
	// MaxTokens is how many tokens a spec file may hold, a bound on the
	// parser's work: a file of MaxFileSize holds about 50,000 tokens
	// when written by hand.
	MaxTokens = 100_000
)

// nestFrame is one open bracket, brace, parenthesis, template or template
// directive; chain counts the unary and conditional operators in it whose
// operands the parser is still parsing, each one more level of recursion.
type nestFrame struct {
	open  hclsyntax.TokenType
	chain int
}

// directive marks an open %{if} or %{for} template directive.
const directive hclsyntax.TokenType = -1

// closes maps each closing token to the opening tokens it closes.
var closes = map[hclsyntax.TokenType][]hclsyntax.TokenType{
	hclsyntax.TokenCBrace:         {hclsyntax.TokenOBrace},
	hclsyntax.TokenCBrack:         {hclsyntax.TokenOBrack},
	hclsyntax.TokenCParen:         {hclsyntax.TokenOParen},
	hclsyntax.TokenCQuote:         {hclsyntax.TokenOQuote},
	hclsyntax.TokenCHeredoc:       {hclsyntax.TokenOHeredoc},
	hclsyntax.TokenTemplateSeqEnd: {hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl},
}

// operandEnd holds the tokens after which a minus is a binary operator.
var operandEnd = map[hclsyntax.TokenType]bool{
	hclsyntax.TokenIdent: true, hclsyntax.TokenNumberLit: true,
	hclsyntax.TokenCBrace: true, hclsyntax.TokenCBrack: true, hclsyntax.TokenCParen: true,
	hclsyntax.TokenCQuote: true, hclsyntax.TokenCHeredoc: true,
}

// checkSyntax checks src, the spec file filename, against MaxTokens and
// MaxNesting, scanning its tokens without recursion. It counts an upper
// bound of the parser's recursion: a closing token that does not match the
// innermost open one is not counted as closing anything. The diagnostic
// points where a limit is crossed. Lexical errors are left to the parser.
func checkSyntax(filename string, src []byte) hcl.Diagnostics {
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	stack := []nestFrame{{open: hclsyntax.TokenEOF}} // the file's top level
	depth := 0                                       // open frames and chained operators
	prev := hclsyntax.TokenNewline
	for i, tok := range tokens {
		top := &stack[len(stack)-1]
		switch tok.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			if tok.Type == hclsyntax.TokenTemplateControl {
				switch directiveName(tokens[i+1:]) {
				case "if", "for":
					stack = append(stack, nestFrame{open: directive})
					depth++
				case "endif", "endfor":
					if top.open == directive {
						depth -= 1 + top.chain
						stack = stack[:len(stack)-1]
					}
				}
			}
			stack = append(stack, nestFrame{open: tok.Type})
			depth++
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			for _, open := range closes[tok.Type] {
				if top.open == open {
					depth -= 1 + top.chain
					stack = stack[:len(stack)-1]
					break
				}
			}
		case hclsyntax.TokenBang, hclsyntax.TokenQuestion:
			top.chain++
			depth++
		case hclsyntax.TokenMinus:
			if !operandEnd[prev] {
				top.chain++
				depth++
			}
		case hclsyntax.TokenComma:
			depth -= top.chain
			top.chain = 0
		case hclsyntax.TokenNewline:
			if top.open == hclsyntax.TokenEOF || top.open == hclsyntax.TokenOBrace {
				depth -= top.chain
				top.chain = 0
			}
		}
		if depth > MaxNesting {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Nesting too deep",
				Detail: fmt.Sprintf("Brackets, braces, parentheses, templates and unary or conditional operators nest more than %d levels deep here, the limit for a spec.",
					MaxNesting),
				Subject: tok.Range.Ptr(),
			}}
		}
		prev = tok.Type
	}
	if len(tokens) > MaxTokens {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Spec too large",
			Detail:   fmt.Sprintf("The file holds more than %d tokens, the limit for a spec file.", MaxTokens),
			Subject:  tokens[MaxTokens].Range.Ptr(),
		}}
	}
	return nil
}

// directiveName returns the keyword of the template directive whose tokens
// follow its opening %{ (which holds any strip marker).
func directiveName(tokens hclsyntax.Tokens) string {
	for _, t := range tokens {
		if t.Type == hclsyntax.TokenIdent {
			return string(t.Bytes)
		}
		return ""
	}
	return ""
}
