package sim

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Series is one policy's curve on the plot.
type Series struct {
	Name  string
	Curve []Point
	// Label is shown in the legend beside the name.
	Label string
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// PlotSVG draws GPU allocation against arrived workload (both % of
// capacity) for each series, with the ideal (everything placed, up to
// capacity) dashed.
func PlotSVG(w io.Writer, title string, series []Series) error {
	const (
		width, height         = 760, 480
		left, right, top, bot = 70, 230, 40, 60
		xMax, yMin, yMax      = float64(Inflation), 50.0, 100.0
		plotW, plotH          = width - left - right, height - top - bot
		xTick, yTick          = 10, 5
	)
	x := func(v float64) float64 { return left + v/xMax*plotW }
	y := func(v float64) float64 {
		v = min(max(v, yMin), yMax)
		return top + (yMax-v)/(yMax-yMin)*plotH
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	for v := 0; v <= int(xMax); v += xTick {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`, x(float64(v)), top, x(float64(v)), top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(v)), top+plotH+16, v)
	}
	for v := int(yMin); v <= int(yMax); v += yTick {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, left, y(float64(v)), left+plotW, y(float64(v)))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d</text>`+"\n", left-6, y(float64(v))+4, v)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">arrived workload (GPU asked for, %% of capacity)</text>`+"\n", left+plotW/2, height-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">GPU allocated (%% of capacity)</text>`+"\n", top+plotH/2)
	// Ideal: allocation follows arrival up to capacity.
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#999" stroke-dasharray="5 4" points="%.1f,%.1f %.1f,%.1f %.1f,%.1f"/>`+"\n", x(yMin), y(yMin), x(100), y(100), x(xMax), y(100))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="2 3"/>`+"\n", x(100), top, x(100), top+plotH)
	for i, s := range series {
		color := palette[i%len(palette)]
		var pts []string
		for _, p := range s.Curve {
			if p.Allocated < yMin && p.Arrived < yMin {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Arrived), y(p.Allocated)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := top + 10 + i*34
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`, left+plotW+12, ly, left+plotW+32, ly, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`, left+plotW+38, ly+4, html.EscapeString(s.Name))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#555">%s</text>`+"\n", left+plotW+38, ly+18, html.EscapeString(s.Label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
